variable "release" { type = string }
variable "rev" { type = string }
variable "db_password" {
  type      = string
  sensitive = true
}
variable "extra" { type = bool }
variable "fail" { type = bool }

# Changes in place when the release changes; carries a sensitive value.
resource "terraform_data" "config" {
  input = { release = var.release, password = var.db_password }
}

# Replaced when rev changes.
resource "terraform_data" "unit" {
  input            = "unit"
  triggers_replace = [var.rev]
}

# Created when extra turns true, deleted when it turns false.
resource "terraform_data" "extra" {
  count = var.extra ? 1 : 0
  input = "extra"
}
resource "terraform_data" "legacy" {
  count = var.extra ? 0 : 1
  input = "legacy"
}

# With fail: replaced, and its provisioner exits 1, so the apply fails half-way.
resource "terraform_data" "migration" {
  count            = var.fail ? 1 : 0
  triggers_replace = [var.release]
  provisioner "local-exec" {
    command = "exit 1"
  }
}
# Depends on the migration: with fail, the apply never reaches it.
resource "terraform_data" "after_migration" {
  input      = var.release
  depends_on = [terraform_data.migration]
}
