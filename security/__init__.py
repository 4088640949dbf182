"""Supply chain: each image's SBOM, its vulnerability scan and gate, and its signed provenance."""
