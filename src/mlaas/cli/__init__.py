"""The `mlaas` command (`mlaas.cli.main`) and its commands."""
