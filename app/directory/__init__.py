"""The school directory: families, staff and who may see which contact detail."""
