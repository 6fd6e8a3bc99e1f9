"""recsys_matta.tracking"""
