"""recsys_matta.metrics"""
