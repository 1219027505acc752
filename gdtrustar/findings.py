"""Shape detection and normalisation of GuardDuty findings (interface stub; being implemented)."""
