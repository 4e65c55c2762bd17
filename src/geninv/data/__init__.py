"""geninv.data"""
