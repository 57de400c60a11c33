"""The demo: synthetic battery-CT cells (``generator``), real CT slices with injected
cracks (``realct``), and the ground truth both write (``truth``). Nothing outside this
subpackage imports it except the demo's own rule and the command line."""
