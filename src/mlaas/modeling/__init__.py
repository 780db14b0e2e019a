"""Models as objects: saving, loading and trusting model files, the Lightning module and
Trainer, fitting, and the trainer process (the request/outcome boundary other executors plug
into). Imports core, stores and families, never a stage."""
