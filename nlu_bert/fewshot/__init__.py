"""The GPT-2 few-shot fallback's side of nlu-bert, behind
:class:`nlu_bert.classifiers.gpt2_fewshot_classifier.GPT2FewShotIntentClassifier`.

``prompts`` (templates, token-level encoding, example choice), ``decision`` (when to act, which candidates, the
answer: pure functions), ``scoring`` (candidate log-likelihoods with torch), ``fine_tune``, ``export`` (the scoring
step as one ONNX graph) and ``onnx_scorer`` (serving it without torch). Importing this package imports nothing
heavy.
"""
