"""Stage 2: render Packer HCL2 per target from the manifest, and run Packer on it."""
