"""Running the stage table: the generated `dvc.yaml` and the stages' real imports."""
