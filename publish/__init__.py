"""Stage 5: publish validated images, keep the record of them, move channels, retire old ones."""
