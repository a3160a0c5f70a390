"""Data sets, image decoding, preprocessing ("feature extractor"), augmentation and collate.

Import from the modules themselves (`vit_finetune.data.preprocess`, `.sources`, ...). Only `sources`,
`folders` and `pixel_store` import `datasets`; the prediction path (`images`, `preprocess`) never
loads it.
"""
