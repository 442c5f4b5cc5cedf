"""Local stand-ins for every external system: Functions host, Entra ID, Graph/Teams, Epic."""
