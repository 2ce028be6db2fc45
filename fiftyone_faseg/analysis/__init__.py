"""Iterating on a finished run without the diffusion model: threshold sweeps and curves from
the stored score maps, and re-thresholding a field (:mod:`.iterate`)."""
