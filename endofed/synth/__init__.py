"""Procedural female-pelvis phantom rendered as each site's scanner would acquire it (``endofed synth``).

The embedded benchmark: no real labelled endometriosis MRI can ship, so the demo and the tests use this.
Contrast comes from tissue T1/T2/PD and the sequences' signal equations (``signal``), anatomy and findings
are procedural and varied per subject (``anatomy``), each site has its own protocol, noise, bias and
cohort mix (``profile``). It must not be tuned to make any arm of a comparison win.
"""
