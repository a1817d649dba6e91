"""The runs layer (see ../shared/DESIGN.md, Layers): code that loads data and checkpoints, runs an
algorithm, and saves what came out (files, figures, rows). Algorithm packages (attacks, defenses,
hardening) never import it; the CLI and the bench do."""
