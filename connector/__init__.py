"""Azure Functions blueprints: the only package that imports ``azure.functions``."""
