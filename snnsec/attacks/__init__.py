"""Attacks on spiking classifiers: ``backdoor`` (training-time poisoning) and, from the
adversarial engineer, ``adversarial`` (test-time perturbations)."""
