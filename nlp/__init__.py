"""Natural-language understanding for the 云芳邻 bot.

Pure: text and catalogs in, results out. No database, network or WeChat here.
Submodules: normalize, tokenizer, intents, entities, fuzzy, appeals.
"""
