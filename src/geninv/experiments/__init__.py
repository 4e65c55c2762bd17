"""geninv.experiments"""
