"""geninv.train"""
