"""recsys_matta.serving"""
