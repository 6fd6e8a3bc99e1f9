"""recsys_matta.models"""
