"""mlaas: models as a service. Data in; a validated, trained, evaluated, registered, packaged and
served model out, by one Prefect flow or `dvc repro` over the same stage functions."""

__version__ = "0.1.0"
