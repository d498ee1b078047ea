"""BERT's side of nlu-bert, behind :class:`nlu_bert.classifiers.bert_intent_classifier.BertIntentClassifier`.

``model`` (the intent model: encoder + intent head), ``training`` (data checks and the fine-tuning loop),
``export`` (what the archive holds for each inference backend), ``predictors`` (token ids -> logits, one class per
backend) and ``native/`` (nlu-bert's own int8 kernel). Importing this package imports nothing heavy.
"""
