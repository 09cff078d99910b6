"""What to attach: selection elements from annotations, resolved delegate lists, ordered attachments."""
