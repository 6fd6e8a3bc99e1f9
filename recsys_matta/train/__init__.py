"""recsys_matta.train"""
