"""Names of the surrogate gradients the harness can put on a spiking neuron (see
:func:`snnsec.harness.override_surrogate`); kept apart from the harness so that code listing them
(the CLI's ``--help``) does not import torch."""

SURROGATES = ("sigmoid", "atan", "triangle", "rect", "ste")
