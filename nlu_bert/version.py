__version__ = "0.2.0"

# What each component writes into the Rasa model archive. A format is bumped whenever an older nlu-bert could
# no longer serve what is written; each component refuses, at load time with a clear message, a format it
# does not read.
BERT_ARCHIVE_FORMAT = 1
# 2 (nlu-bert 0.2.0): the int8 GPT-2 scorer's key/value cache inputs and outputs are fp16, which nlu-bert 0.1.0
# would feed fp32 (a type error on the first fallback); its torch weights and fp32 scorer are unchanged.
GPT2_ARCHIVE_FORMAT = 2
GPT2_ARCHIVE_FORMATS_READ = (1, 2)
