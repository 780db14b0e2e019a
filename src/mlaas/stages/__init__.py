"""The pipeline's stages, load … package, one module each, and the one stage table
(`mlaas.stages.table`) that the Prefect flow, `mlaas stage NAME` and `dvc.yaml` are built from."""
