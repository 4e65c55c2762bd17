"""geninv.certificates"""
