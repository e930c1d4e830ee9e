"""Text and language models: tokenized datasets, Hugging Face teachers, small students, layer-map and token-level
distillation. `transformers` is imported only when a text model or tokenizer is first needed."""
