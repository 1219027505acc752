"""Finding -> Station report (interface stub; being implemented)."""
