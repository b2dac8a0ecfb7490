"""Sample-network generator: fictional hospitals in real input formats, with ground truth.

See docs/sample-networks.md for what each sample holds and how to regenerate
the committed ones.
"""

from twin.sample.generator import GenerationSummary, generate_pair, generate_site

__all__ = ["GenerationSummary", "generate_site", "generate_pair"]
