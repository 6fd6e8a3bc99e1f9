"""recsys_matta.modules"""
