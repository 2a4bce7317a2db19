"""The operator's console for platform support staff: support requests and granted access."""
