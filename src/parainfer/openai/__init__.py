"""The OpenAI protocol in one place: request/response models, the error envelope, request rules,
body builders, logprobs shapes, the batch file format and the batch predictor. Used by the
server's routes and by batch jobs; imports no HTTP code and nothing of serving/.
"""
