"""Readers, the Cohort, the torch Dataset/collate, the synthetic cohort generator and data modules."""
