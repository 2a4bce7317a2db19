"""The school's identity: brand colour, crest, brand stylesheet, and initials avatars."""
