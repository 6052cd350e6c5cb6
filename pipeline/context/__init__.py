"""Clinical context of entities: sentences, sections and ConText assertion (negation,
temporality, experiencer). Pure functions over a text and character offsets: no Ray, no
torch, no I/O beyond reading the lexicon shipped beside them."""
