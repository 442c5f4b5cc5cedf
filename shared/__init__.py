"""Plain, typed core of the connector; knows nothing of ``azure.functions``."""
