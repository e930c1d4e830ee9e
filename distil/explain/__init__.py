"""Transparent students (tree, linear, rules, soft decision tree), their transfer data, fidelity and explanations.

Kept free of imports so that the recipe schema can load `distil.explain.config` without torch or scikit-learn.
"""
