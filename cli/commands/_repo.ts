/** Shared helpers for command modules (files starting with _ are not commands). */
import { Repository } from '../../src/repo/repository.js';

export async function openRepo(path: string): Promise<Repository> {
  return Repository.open(path);
}
