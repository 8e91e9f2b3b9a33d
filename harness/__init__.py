"""The engine: sandboxed interpreter, tool-integrated rollouts, generation backends, run store, CLI."""
