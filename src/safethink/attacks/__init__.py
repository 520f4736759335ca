"""safethink.attacks"""
