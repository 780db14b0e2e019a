"""Where state lives, each behind a small interface: the workspace's folders, files, tracking,
the model registry, locks, trusted model files. Imports only `mlaas.core`."""
