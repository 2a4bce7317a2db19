"""Importing families, guardians, students and classes from a CSV file."""
