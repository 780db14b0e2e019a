"""The control plane: the platform's HTTP API (`mlaas.control.api`) and the functions it and
the CLI share (`mlaas.control.operations`): pipelines, runs, promotion, model servers."""
