"""C++ (and CUDA) TensorFlow kernels: RoIAlign, DeformConv2d (v1) and ModulatedDeformConv2d (v2).

Compiled on first use against the installed TensorFlow; pure-TF twins in `kdet.ops` are the
fallback and the XLA path. Filled by the custom-ops work (issue 3).
"""
