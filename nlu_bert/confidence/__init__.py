"""Confidences that mean something: a temperature fitted on held-out data (:mod:`.calibration`), an out-of-scope
factor from the energy of the logits (:mod:`.out_of_scope`), the rule for messages without content
(:mod:`.content`), and what `rasa train` fits, stores and reports (:mod:`.fitting`, :mod:`.scorer`).

numpy and scipy only: the served model imports this without torch.
"""
