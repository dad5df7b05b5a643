"""Getting reports in: decode bytes, validate documents, load them into the store."""
