"""The shipped experiments: a Hydra config tree of YAML files, with the hardware profiles
and pipelines they name. A wheel installs this folder (without bench/) as `realloc.shipped`;
`realloc.experiment.EXPERIMENTS_DIR` finds it either way."""
