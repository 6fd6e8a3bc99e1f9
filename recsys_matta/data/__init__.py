"""recsys_matta.data"""
