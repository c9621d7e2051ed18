"""Interoperability with the Hugging Face ecosystem: export to ``transformers`` and
``sentence-transformers``, and start pre-training from a ``transformers`` BERT checkpoint
(:mod:`predrecon.interop.hf`)."""
