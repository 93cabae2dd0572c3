"""Tools on top of the core: the demo, the benchmarks of the pipeline and the model card check."""
