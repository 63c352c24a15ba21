"""Recommendations: candidate generators (ALS, item-item, repurchase, popularity), LightGBM ranker, business rules,
evaluation against baselines on time splits, and the trainer. The served model lives in training/member_pyfunc/recs.py."""
